//! The mesh at N peers: the real sans-IO [`Mesh`] of every peer, run in the deterministic
//! simulator (`meshnet_mesh::sim`) over links of 1–50 ms, measuring what one more peer joining
//! costs and what an idle mesh costs.
//!
//! The mesh is built as a random tree plus extra links: peer `i` dials `degree` distinct
//! earlier peers (fewer for the first ones), discovery off, so the graph is sparse and
//! connected, as a mesh of 1,000 hosts behind a connection limit is. Once every peer's view
//! agrees, the last peer (kept apart until then) dials `degree` random peers, and the harness
//! steps virtual time in 10 ms until every peer holds its record and its links.
//!
//! Figures ([`Figures`]):
//! - `join_convergence_s`: virtual time from the join's first dial until every live peer
//!   holds every reachable peer's current record and the joiner has all its links.
//! - `join_bytes_per_peer`: control bytes all peers sent in that window, divided by the number
//!   of peers (heartbeats that fall into the window included).
//! - `router_state_bytes`: heap bytes of the busiest router's [`Mesh`] (most connections),
//!   status cache filled, measured by dropping it under the counting allocator
//!   ([`crate::alloc`]), plus the struct itself.
//! - `idle_bytes_per_peer_per_min`: control bytes per peer per minute over 2 idle minutes.

use std::time::{Duration, Instant};

use meshnet_mesh::Mesh;
use meshnet_mesh::sim::Sim;

/// What to build.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// Peers in all, the joiner included.
    pub peers: usize,
    /// Links each peer dials when it is added (and the joiner dials).
    pub degree: usize,
    /// Seed of the simulation (topology, latencies, every peer's randomness).
    pub seed: u64,
    /// Shortest link latency.
    pub min_latency: Duration,
    /// Longest link latency.
    pub max_latency: Duration,
}

impl Default for ScaleConfig {
    fn default() -> ScaleConfig {
        ScaleConfig {
            peers: 100,
            degree: 3,
            seed: 42,
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(50),
        }
    }
}

/// The measured figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub peers: usize,
    pub join_convergence_s: f64,
    pub join_bytes_per_peer: f64,
    pub router_state_bytes: u64,
    pub idle_bytes_per_peer_per_min: f64,
    /// Virtual time the initial mesh took to agree (not a figure of the issue; shown on stderr).
    pub build_convergence_s: f64,
    /// The join's bytes by message kind, summed over all peers (shown on stderr).
    pub join_bytes_by_kind: std::collections::BTreeMap<&'static str, u64>,
}

impl Figures {
    /// The lines `bin/scale` prints: `peers = N`, then `scale: NAME = VALUE UNIT`.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("peers = {}", self.peers),
            format!(
                "scale: join_convergence_s = {:.3} s",
                self.join_convergence_s
            ),
            format!(
                "scale: join_bytes_per_peer = {:.0} B",
                self.join_bytes_per_peer
            ),
            format!("scale: router_state_bytes = {} B", self.router_state_bytes),
            format!(
                "scale: idle_bytes_per_peer_per_min = {:.0} B",
                self.idle_bytes_per_peer_per_min
            ),
        ]
    }
}

/// xorshift64*, for the topology only (the simulator has its own seeded RNG).
fn next(x: &mut u64) -> u64 {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// `k` distinct numbers below `n`.
fn pick(x: &mut u64, n: usize, k: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while out.len() < k.min(n) {
        let c = (next(x) % n as u64) as usize;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Runs virtual time in `step`s until `done`, for at most `limit`; returns the time taken.
fn run_until(
    sim: &mut Sim,
    step: Duration,
    limit: Duration,
    mut done: impl FnMut(&Sim) -> bool,
) -> Option<Duration> {
    let start = sim.elapsed();
    loop {
        if done(sim) {
            return Some(sim.elapsed() - start);
        }
        if sim.elapsed() - start >= limit {
            return None;
        }
        sim.run_for(step);
    }
}

/// Builds the mesh, joins one peer, and measures. `live_bytes` reads the counting allocator.
pub fn run(cfg: &ScaleConfig, live_bytes: fn() -> usize) -> Result<Figures, String> {
    if cfg.peers < 3 || cfg.degree == 0 {
        return Err("need at least 3 peers and a degree of at least 1".into());
    }
    let n = cfg.peers;
    let joiner = n - 1;
    let mut sim = Sim::with_config(n, cfg.seed, |_, c| c.discovery = false);
    sim.set_latency_range(cfg.min_latency, cfg.max_latency);
    let mut x = cfg.seed | 1;
    let mut links = Vec::new();
    for i in 1..joiner {
        for j in pick(&mut x, i, cfg.degree) {
            sim.connect(i, j);
            links.push((i, j));
        }
    }
    let build = run_until(
        &mut sim,
        Duration::from_secs(1),
        Duration::from_secs(900),
        |s| links.iter().all(|&(a, b)| s.connected(a, b)) && s.converged(),
    )
    .ok_or_else(|| {
        format!(
            "the initial {} peers did not agree in 900 s (seed {}): {:?}",
            n - 1,
            cfg.seed,
            sim.divergence()
        )
    })?;

    // Join in the quiet stretch just after a periodic digest (they fire every 30 s of virtual
    // time), so the window holds the join's traffic and heartbeats only.
    let into = sim.elapsed().as_millis() % 30_000;
    sim.run_for(Duration::from_millis((30_000 - into) as u64) + Duration::from_secs(2));
    sim.reset_stats();
    let targets = pick(&mut x, joiner, cfg.degree);
    for &j in &targets {
        sim.connect(joiner, j);
    }
    let want = targets.len();
    let join = run_until(
        &mut sim,
        Duration::from_millis(10),
        Duration::from_secs(25),
        |s| s.conn_count(joiner) == want && s.converged(),
    )
    .ok_or_else(|| {
        format!(
            "the join did not converge in 25 s (seed {}): {} of {want} links, {:?}",
            cfg.seed,
            sim.conn_count(joiner),
            sim.divergence()
        )
    })?;
    let join_bytes: u64 = sim.bytes_sent().iter().sum();
    let mut join_bytes_by_kind = std::collections::BTreeMap::new();
    for per_peer in &sim.bytes {
        for (k, b) in per_peer {
            *join_bytes_by_kind.entry(*k).or_default() += *b;
        }
    }

    // Idle: let the join's echoes settle, then two quiet minutes.
    sim.run_for(Duration::from_secs(30));
    sim.reset_stats();
    let idle = Duration::from_secs(120);
    sim.run_for(idle);
    if !sim.converged() {
        return Err(format!("the idle mesh diverged: {:?}", sim.divergence()));
    }
    let idle_bytes: u64 = sim.bytes_sent().iter().sum();

    let busiest = (0..n).max_by_key(|&i| sim.conn_count(i)).unwrap_or(0);
    let now = sim.now();
    let _ = sim.peers[busiest].mesh.status(now);
    let state = router_state_bytes(&mut sim, busiest, now, live_bytes);

    Ok(Figures {
        peers: n,
        join_convergence_s: join.as_secs_f64(),
        join_bytes_per_peer: join_bytes as f64 / n as f64,
        router_state_bytes: state,
        idle_bytes_per_peer_per_min: idle_bytes as f64 / n as f64 / (idle.as_secs_f64() / 60.0),
        build_convergence_s: build.as_secs_f64(),
        join_bytes_by_kind,
    })
}

/// Heap bytes of peer `i`'s mesh (and the struct): what the allocator gets back when it is
/// dropped. The peer is left with a fresh mesh.
fn router_state_bytes(sim: &mut Sim, i: usize, now: Instant, live_bytes: fn() -> usize) -> u64 {
    let fresh = Mesh::new(sim.peers[i].config.clone(), now);
    let old = std::mem::replace(&mut sim.peers[i].mesh, fresh);
    let before = live_bytes();
    drop(old);
    let after = live_bytes();
    (before.saturating_sub(after) + std::mem::size_of::<Mesh>()) as u64
}
